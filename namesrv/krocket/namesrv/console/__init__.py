"""The web console each name server serves at ``/``: the cluster, topics, consumer groups, messages, dead
letters and topic create, read from the brokers' HTTP admin APIs (see ``routes``; the page is ``static/``)."""

from krocket.namesrv.console.routes import add_console

__all__ = ["add_console"]
