"""``deepguard scan``: analyse a large set of files on Ray Data, resumably, into JSONL or Parquet.

One job per module: :mod:`.files` lists the inputs lazily and keys them, :mod:`.ledger` is the out file (what is
done, appending finished rows crash-safely), :mod:`.ray_scan` is the Ray side (cluster, actors, dataset) and
:mod:`.command` the sub-command that wires them. Only argparse is imported until a scan runs.
"""
