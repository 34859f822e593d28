"""`python -m modelcache` is the `modelcache` command."""

from modelcache.cli.main import main

main()
