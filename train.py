"""Train and evaluate AEVB models: ``python train.py fit --config configs/mnist.yaml``.

See ``python train.py --help`` and the README.
"""

from lit_vae.__main__ import main

if __name__ == "__main__":
    main()
