"""``python -m wavemlp.cli``: what the launch and sbatch scripts run on every rank."""

from . import main

main()
