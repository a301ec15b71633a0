"""`python -m zlogcollect`: the same as the `zlogcollect` command."""

from zlogcollect.cli import main

main()
