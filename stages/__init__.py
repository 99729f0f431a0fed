"""Media stages: probe, image renditions, video ladder, thumbnails, audio, HLS, manifest."""
