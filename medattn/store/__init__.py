"""What a run leaves on disk and how it is read back: paths, model files, manifest, identity, plugin copies, views."""
