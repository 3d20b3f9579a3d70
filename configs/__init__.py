"""The paper's experiment configs, shipped with the package: ``lit-vae fit --config mnist`` runs
``mnist.yaml`` from here when no file of that name is in the working directory."""
