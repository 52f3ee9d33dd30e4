"""``tilex view``: look at an output in a web browser, served from this machine only."""

from __future__ import annotations

import click


@click.command("view")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 to serve on (0: a free one, printed).",
)
@click.option("--no-browser", is_flag=True, help="Print the address only; do not open a browser.")
def command(out: str, port: int, no_browser: bool) -> None:
    """Open the tilex output OUT in a web browser, at any zoom, without converting it.

    A local server on 127.0.0.1 reads the pyramid's tiles as the browser needs
    them; it reads only inside OUT and never writes. Move the threshold slider
    to see what another threshold would flag, without running again. Ctrl-C
    stops the server.
    """
    import signal
    import webbrowser

    from tilex.viewer import ViewServer

    server = ViewServer(out, port=port)
    click.echo(f"tilex view: serving {server.output.path} at {server.url}  (Ctrl-C to stop)")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    click.echo("tilex view: stopped")
