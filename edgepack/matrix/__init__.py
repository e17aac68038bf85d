"""Many projects x targets x recipes as one build: `edgepack matrix matrix.toml`.

spec.py reads the matrix file; graph.py plans it as a graph of pipeline steps (prepare
once per project and recipe, export once per distinct artifact, then the builds that
verify, measure and write every target's dist from those exports); steps.py runs one
step, in a process of its own; executors.py runs the graph serially, on a local process
pool or on a Ray cluster; results.py writes the one JSON result and the HTML index.
"""
