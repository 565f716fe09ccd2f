"""Running the pipeline's steps on a Ray cluster (``cluster.executor: ray``).

Ray is an optional dependency (the ``ray`` extra): nothing here is imported by ``import fsd``
or ``fsd --help``; the executor's modules import Ray inside their functions.
"""
