from cifar_dcgan.sweep.cli import main

main()
