"""The contract both sides of the pipeline share (docs/design.md, "Packages and their boundaries").

Airflow's tasks, the Spark jobs and the EMR zip all import this package, and it imports nothing
outside Python's standard library: where things live in the lake (``lake``), which upload names
can be processed and what label a path carries (``names``), and what an upload is from its
first bytes (``headers``). A fact defined here is defined nowhere else.
"""
