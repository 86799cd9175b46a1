"""``python -m training [options]`` = ``python -m training.train [options]`` (see training/train.py)."""

from training.train import main

if __name__ == "__main__":
    main()
