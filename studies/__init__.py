"""The shipped study files (TOML), installed as package data of resnet_space.studies."""
