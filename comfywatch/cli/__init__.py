"""The command line: ``run``, ``doctor``, ``canary``, ``check-config``, ``simulate`` (the top layer: it may import
every other package; nothing imports it).
"""
