"""What a build leaves behind: dist folders, manifests, (later) signed archives."""
