"""The registry's schema revisions, oldest first; each file is a frozen snapshot, never edited once
released (a change is a new revision)."""
