"""systemd units, the tmpfiles.d rule and the sudoers sample, shipped inside the one file so
that `lavalite install` can put them in place (see docs/operations.md)."""
