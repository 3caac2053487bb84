"""``python -m auditlog``: the command line."""

from auditlog.cli import main

main()
