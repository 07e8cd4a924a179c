"""``python -m prmfactory.cli``."""

from prmfactory.cli import main

main()
