"""`python -m service.cli`: the same command line as `caviar`."""

from service.cli import main

main()
