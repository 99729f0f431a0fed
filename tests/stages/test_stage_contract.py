"""A stage is one declaration: its name, its params (types, defaults, ranges), the stages
it needs and where its outputs are. A DAG built from the declaration checks the params
before anything is queued; run by a real worker, the stage gets its defaults and the
capabilities its job was routed for, and the manifest lists its outputs (and storage
uploads them) without either knowing the stage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.model import Dag, EdgePolicy
from pipeline.registry import REGISTRY, Registry
from stages import catalog
from stages.contract import JOB_KEYS, Catalog, media_stage
from stages.output import atomic_output, file_facts, output_name, output_path, sha256_of
from stages.params import integer, label, param
from stages.probe import probe
from tests.helpers import run_dag

ENGINE = Registry()  # the toy's own registry and catalog: the built-in ones stay as they are
TOYS = Catalog()
for framing in ("probe", "manifest"):
    ENGINE.add(REGISTRY.get(framing))


@dataclass(frozen=True)
class StampParams:
    copies: int = param(1, integer(1, 4), "how many stamp files to write")
    word: str = param("stamp", label, "in each file's name")


@media_stage(
    "t.stamp",
    params=StampParams,
    needs=("probe",),
    outputs=("stamps",),
    kinds=("image",),
    essential=True,
    tags=("stampcap",),
    registry=ENGINE,
    catalog=TOYS,
)
def stamp(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    size = f"{inputs['probe']['width']}x{inputs['probe']['height']}\n"
    name = output_name(params["name"])
    stamps = []
    for i in range(params["copies"]):
        final = output_path(params["out_dir"], f"{name}_{params['word']}{i}.txt")
        with atomic_output(final) as tmp:
            tmp.write_text(size)
        stamps.append(file_facts(final, kind="text", format="txt"))
    return {"stamps": stamps, "tags": sorted(getattr(ctx, "tags", ()))}


def stamp_dag(src: Path, out: Path, table: dict[str, Any]) -> Dag:
    """probe -> t.stamp -> manifest, every job added (and checked) by its declaration."""
    dag = Dag()
    common = {"input": str(src), "out_dir": str(out), "name": src.stem}
    built_in = {s.name: s for s in catalog()}
    built_in["probe"].add_to(dag, {"input": str(src)})
    toy = TOYS.get("t.stamp")
    toy.add_to(dag, {**table, **common})
    edges = {"probe": EdgePolicy.FAIL, toy.name: EdgePolicy.FAIL}
    built_in["manifest"].add_to(dag, {**common, "preset": "toy"}, after=edges)
    return dag


@pytest.fixture
def toy_client(r: redis.Redis, namespace: str) -> Client:
    return Client(r, namespace=namespace, registry=ENGINE)


@pytest.fixture
def toy_broker(r: redis.Redis, namespace: str) -> Broker:
    return Broker(r, namespace=namespace, registry=ENGINE, lease=30)


def test_a_declared_stage_runs_end_to_end_and_the_manifest_lists_its_outputs(
    media: Path, tmp_path: Path, toy_client: Client, toy_broker: Broker
) -> None:
    src, out = media / "large.jpg", tmp_path / "large"
    dag = stamp_dag(src, out, {"copies": 2})
    toy_client.submit(dag)
    queues = ("default", "default@stampcap")  # the toy needs a worker with its capability
    assert run_dag(toy_client, toy_broker, dag.id, queues=queues, timeout=60) == "completed"

    manifest = json.loads((out / "manifest.json").read_text())
    listed = [o for o in manifest["outputs"] if o["stage"] == "t.stamp"]
    # ``word`` was not given: the declared default named the files.
    assert [Path(o["path"]).name for o in listed] == ["large_stamp0.txt", "large_stamp1.txt"]
    facts = probe(src)
    for o in listed:
        assert (o["kind"], o["format"]) == ("text", "txt")
        assert o["sha256"] == sha256_of(o["path"])
        assert Path(o["path"]).read_text() == f"{facts['width']}x{facts['height']}\n"
    assert manifest["stages"]["t.stamp"]["state"] == "completed"
    assert manifest["stages"]["t.stamp"]["attempt"] == 1  # the contract's stage_info
    result = (toy_client.job(dag.job_id("t.stamp")) or {})["result"]
    assert result["tags"] == ["stampcap"]  # from the job context, not the queue's name


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"copies": 9}, "copies must be an integer in 1..4, not 9"),
        ({"copies": "2"}, "copies must be an integer in 1..4, not '2'"),
        ({"copies": True}, "copies must be an integer in 1..4, not True"),
        ({"word": "../x"}, "word must be 1 to 32 characters"),
        ({"copeis": 2}, "unknown key 'copeis' (accepted: copies, word)"),
    ],
)
def test_a_bad_param_is_rejected_when_the_dag_is_built_naming_the_key(
    media: Path, tmp_path: Path, table: dict[str, Any], needle: str
) -> None:
    with pytest.raises(SubmissionError) as err:
        stamp_dag(media / "large.jpg", tmp_path / "large", table)
    assert "t.stamp" in str(err.value) and needle in str(err.value), str(err.value)


def test_a_stage_bound_for_storage_publishes_its_declared_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAPIPE_SCRATCH", str(tmp_path / "scratch"))
    store = tmp_path / "store"
    params = {"input": "in.jpg", "name": "in", "storage": f"file://{store}", "copies": 1}
    result = stamp(None, params, {"probe": {"width": 4, "height": 3}})
    assert result["stamps"][0]["path"] == str(store / "in" / "in_stamp0.txt")
    assert (store / "in" / "in_stamp0.txt").read_text() == "4x3\n"
    assert not list((tmp_path / "scratch").iterdir())  # the scratch folder is gone


def test_the_catalog_is_what_a_preset_needs_to_know_of_a_stage() -> None:
    (toy,) = TOYS
    assert (toy.name, toy.kinds, toy.needs, toy.essential) == (
        "t.stamp",
        ("image",),
        ("probe",),
        True,
    )
    assert [(p.key, p.type, p.default, p.expects) for p in toy.schema] == [
        ("copies", "int", 1, "an integer in 1..4"),
        ("word", "str", "stamp", "1 to 32 characters among A-Z a-z 0-9 _ -"),
    ]
    # A preset's table may not say where things go; a job's params carry it.
    where = "preset p.toml: [t.stamp]"
    for key in sorted(JOB_KEYS):
        with pytest.raises(SubmissionError, match=re.escape(f"{where}: key '{key}' is not")):
            toy.check({key: "/elsewhere"}, where, job_keys=False)
    toy.check({"copies": 3, "out_dir": "/out"}, where)
    # The built-in stages: one frames every DAG first, one collects last, each kind has an
    # essential stage, and every need is a declared stage.
    built_in = {s.name: s for s in catalog()}
    assert [s.name for s in built_in.values() if not s.kinds and not s.collects] == ["probe"]
    assert [s.name for s in built_in.values() if s.collects] == ["manifest"]
    for kind in ("image", "video"):
        assert any(s.essential for s in built_in.values() if kind in s.kinds)
    assert {n for s in built_in.values() for n in s.needs} <= set(built_in)


def test_a_declaration_that_breaks_its_own_rules_fails_at_import() -> None:
    @dataclass(frozen=True)
    class Bad:
        copies: int = param(0, integer(1, 4))

    with pytest.raises(TypeError, match=r"Bad.copies: default is not an integer in 1\.\.4"):
        media_stage("t.bad", params=Bad, registry=Registry(), catalog=Catalog())

    @dataclass(frozen=True)
    class Routing:
        out_dir: str = param("x", label)

    with pytest.raises(TypeError, match="set by the submitter"):
        media_stage("t.bad", params=Routing, registry=Registry(), catalog=Catalog())


def test_a_new_stage_runs_through_a_preset_with_no_other_place_edited(
    media: Path,
    tmp_path: Path,
    toy_client: Client,
    toy_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three places of adding a stage: its declaration (above), its import (here the
    catalog entry, as ``stages/__init__.py`` would make it) and a preset table. The presets
    read needs, kinds, params and edges from the declaration; nothing else names it."""
    from mediajobs import presets
    from stages.contract import CATALOG

    monkeypatch.setitem(CATALOG._stages, "t.stamp", TOYS.get("t.stamp"))
    ENGINE.add(REGISTRY.get("image_renditions"))
    preset_file = tmp_path / "stamped.toml"
    preset_file.write_text(
        'kind = "image"\n[image_renditions]\nwidths = [64]\nformats = ["jpeg"]\n'
        '["t.stamp"]\ncopies = 3\nword = "mark"\n'
    )
    src, out = media / "large.jpg", tmp_path / "large"
    dag = presets.build_dag(str(src), str(out), presets.load(str(preset_file)))
    assert set(dag.nodes) == {"probe", "image_renditions", "t.stamp", "manifest"}
    toy_client.submit(dag)
    queues = ("default", "default@stampcap")
    assert run_dag(toy_client, toy_broker, dag.id, queues=queues, timeout=60) == "completed"
    manifest = json.loads((out / "manifest.json").read_text())
    stamps = sorted(Path(o["path"]).name for o in manifest["outputs"] if o["stage"] == "t.stamp")
    assert stamps == ["large_mark0.txt", "large_mark1.txt", "large_mark2.txt"]
    assert any(o["stage"] == "image_renditions" for o in manifest["outputs"])

    # The preset is checked against the toy's declared params, naming the file and key.
    preset_file.write_text('kind = "image"\n[image_renditions]\n["t.stamp"]\ncopies = 7\n')
    with pytest.raises(SubmissionError) as err:
        presets.load(str(preset_file))
    assert f"preset {preset_file}: [t.stamp]: copies must be an integer in 1..4" in str(err.value)
    # A preset of another kind may not choose it.
    preset_file.write_text('kind = "video"\n[video_ladder]\n["t.stamp"]\n')
    with pytest.raises(SubmissionError, match=r"\[t.stamp\] does not apply to kind video"):
        presets.load(str(preset_file))
