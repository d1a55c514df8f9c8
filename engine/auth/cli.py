import click


@click.group()
def apikey() -> None:
    """API keys with roles."""
