"""What GPUs this box has and what each can do, checked by trial, not guessed from names.

Each capability is proven by running the smallest real thing that needs it: CUDA by
allocating a tensor, nvJPEG by decoding a JPEG on the device, NVDEC by decoding a clip with
``-hwaccel cuda`` in the bundled ffmpeg, NVENC by encoding one with ``h264_nvenc``. A
data-centre card without NVENC (H100, H200) therefore advertises ``nvdec`` but not
``nvenc``. The probes are injectable, so routing is tested on machines with no GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int


@dataclass
class Capabilities:
    gpus: list[Gpu] = field(default_factory=list)
    found: dict[str, bool] = field(default_factory=dict)  # capability -> usable
    reasons: dict[str, str] = field(default_factory=dict)  # capability -> why / why not

    def tags(self) -> list[str]:
        if not self.gpus:
            return []
        return ["gpu", *[c for c in ("cuda", "nvjpeg", "nvdec", "nvenc") if self.found.get(c)]]

    def describe(self) -> str:
        lines = [f"GPU {g.index}: {g.name}, {g.memory_mib} MiB" for g in self.gpus]
        if not lines:
            lines = [f"no GPU found ({self.reasons.get('gpu', 'no probe ran')})"]
        for cap in ("cuda", "nvjpeg", "nvdec", "nvenc"):
            if cap in self.found:
                mark = "yes" if self.found[cap] else "no "
                lines.append(f"  {cap:7} {mark}  {self.reasons.get(cap, '')}")
        lines.append(f"tags: {','.join(self.tags()) or '-'}")
        return "\n".join(lines)


class Probes(Protocol):
    def list_gpus(self) -> tuple[list[Gpu], str]: ...

    def try_capability(self, name: str, gpu: int) -> tuple[bool, str]: ...


class SystemProbes:
    """The real probes: nvidia-smi, PyTorch if installed, and trial runs of ffmpeg."""

    def __init__(self, ffmpeg: str | None = None) -> None:
        self.ffmpeg = ffmpeg

    def list_gpus(self) -> tuple[list[Gpu], str]:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return [], "nvidia-smi not found (no NVIDIA driver)"
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError) as exc:
            return [], f"nvidia-smi failed: {exc}"
        gpus = []
        for line in out.strip().splitlines():
            index, name, mem = (part.strip() for part in line.split(","))
            gpus.append(Gpu(int(index), name, int(float(mem))))
        return gpus, f"{len(gpus)} GPU(s) from nvidia-smi"

    def try_capability(self, name: str, gpu: int) -> tuple[bool, str]:
        if name == "cuda":
            return _torch_trial(gpu, "import torch; torch.ones(1, device='cuda:%d').sum().item()")
        if name == "nvjpeg":
            return _torch_trial(gpu, _NVJPEG_TRIAL)
        if name in ("nvdec", "nvenc"):
            return self._ffmpeg_trial(name, gpu)
        return False, f"unknown capability {name}"

    def _ffmpeg_trial(self, name: str, gpu: int) -> tuple[bool, str]:
        from stages.ffmpeg_run import ffmpeg_exe

        exe = self.ffmpeg or ffmpeg_exe()
        src = ["-f", "lavfi", "-i", "testsrc2=s=256x144:d=0.2"]
        if name == "nvenc":
            cmd = [
                exe,
                "-hide_banner",
                "-loglevel",
                "error",
                *src,
                "-c:v",
                "h264_nvenc",
                "-gpu",
                str(gpu),
                "-f",
                "null",
                "-",
            ]
        else:  # decode a tiny H.264 clip with the GPU decoder
            cmd = [
                "sh",
                "-c",
                f"{exe} -loglevel error {' '.join(src)} -c:v libx264 -f h264 - | "
                f"{exe} -loglevel error -hwaccel cuda -hwaccel_device {gpu} "
                "-hwaccel_output_format cuda -f h264 -i - -f null -",
            ]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (subprocess.SubprocessError, OSError) as exc:
            return False, f"trial run failed: {exc}"
        if run.returncode == 0:
            return True, "trial run succeeded"
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"trial run failed: {last}"


_NVJPEG_TRIAL = """
import io, torch, torchvision
from PIL import Image
buf = io.BytesIO(); Image.new('RGB', (64, 48), (200, 10, 10)).save(buf, 'JPEG')
data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
img = torchvision.io.decode_jpeg(data, device='cuda:%d')
assert tuple(img.shape) == (3, 48, 64)
"""


def _torch_trial(gpu: int, code: str) -> tuple[bool, str]:
    import sys

    try:
        run = subprocess.run(
            [sys.executable, "-c", code % gpu], capture_output=True, text=True, timeout=120
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return False, f"trial failed: {exc}"
    if run.returncode == 0:
        return True, "trial run succeeded"
    last = (run.stderr.strip().splitlines() or ["no output"])[-1]
    if "No module named" in last:
        return False, "PyTorch not installed (pip install 'mediajobs[gpu]')"
    return False, f"trial failed: {last}"


def detect(
    probes: Probes | None = None, *, disabled: bool = False, only: list[int] | None = None
) -> Capabilities:
    """The box's capabilities; ``disabled`` (--no-gpu) and ``only`` (--gpus 0,1) override."""
    if disabled:
        return Capabilities(reasons={"gpu": "disabled with --no-gpu"})
    probes = probes or SystemProbes()
    gpus, why = probes.list_gpus()
    if only is not None:
        gpus = [g for g in gpus if g.index in only]
        why += f"; limited to --gpus {','.join(map(str, only))}"
    caps = Capabilities(gpus=gpus, reasons={"gpu": why})
    if not gpus:
        return caps
    for cap in ("cuda", "nvjpeg", "nvdec", "nvenc"):
        ok, reason = probes.try_capability(cap, gpus[0].index)
        caps.found[cap], caps.reasons[cap] = ok, reason
    return caps
