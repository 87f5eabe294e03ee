"""Evaluate a checkpoint: python eval.py ckpt_path=PATH [split=val]; see conf/eval.yaml."""

from tagger.cli.evaluate import main

if __name__ == "__main__":
    main()
