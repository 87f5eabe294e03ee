"""Train a tagger: python train.py [hydra overrides]; see README.md and conf/train.yaml."""

from tagger.cli.train import main

if __name__ == "__main__":
    main()
