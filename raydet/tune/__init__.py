"""Ray Tune sweeps over a training config's components and hyper-parameters, written in YAML.

``python -m raydet.tune SWEEP.yaml`` (``raydet.tune.__main__``).  A sweep file is
a training config plus ``search:`` (``space``) and ``tune:`` (``settings``);
``sweep`` reads and checks it, ``driver`` runs the ``Tuner``, ``trial`` is one
trial (a whole raydet training), ``results`` writes the table.
"""
