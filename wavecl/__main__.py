"""``python -m wavecl`` (used by ``torchrun -m wavecl train ...``)."""

from wavecl.cli import main

main()
