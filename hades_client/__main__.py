"""``python -m hades_client``: the same as the ``hades`` command."""

from hades_client.cli import main

main()
