"""``python -m tagger COMMAND ...``: the ``tagger`` command, for any interpreter."""

from tagger.cli.main import main

main()
