"""`python -m cifar_dcgan.compare`: the same command as `cifar-dcgan-compare`."""

from cifar_dcgan.compare.cli import main

if __name__ == "__main__":
    main()
