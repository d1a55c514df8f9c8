import click


@click.group()
def leads() -> None:
    """Leads: import, show, change stage."""
