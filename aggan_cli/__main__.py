"""``python -m aggan_cli`` (also what ``torchrun -m aggan_cli`` runs)."""

from aggan_cli.cli import main

if __name__ == "__main__":
    main()
