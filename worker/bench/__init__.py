"""``stats-worker bench``: how fast the worker is, against the floor it cannot beat.

Read top to bottom: :mod:`~worker.bench.options` (sizes), :mod:`~worker.bench.loader`
(the reference league) run by :mod:`~worker.bench.child` in a child process so
that its memory is not the worker's, :mod:`~worker.bench.harness` (the worker in
this process and its handlers), :mod:`~worker.bench.receiver` (the app's cache
endpoint), :mod:`~worker.bench.latency` and :mod:`~worker.bench.throughput` (the
measurements), :mod:`~worker.bench.samples` (percentiles, RSS),
:mod:`~worker.bench.report` (figures, JSON), :mod:`~worker.bench.targets` (what
they are held to) and :mod:`~worker.bench.render` (the tables).
:mod:`~worker.bench.runner` wires them. docs/performance.md says what each
figure means.
"""
