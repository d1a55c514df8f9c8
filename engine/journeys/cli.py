import click


@click.command()
def simulate() -> None:
    """Run a program on a simulated clock."""
