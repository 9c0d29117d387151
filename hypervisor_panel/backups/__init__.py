"""Backups: VM and panel archives written to backup targets."""
