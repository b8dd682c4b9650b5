"""``python -m syncworker.cli``: the ``syncworker`` command."""

from syncworker.cli import main

main()
