"""vaeflow's Hydra configs (shipped inside the package as ``vaeflow.conf``)."""
