"""The `modelcache` command."""
