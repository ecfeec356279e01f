"""The local stack: moto with template.yaml's resources, the local HttpApi gateway, schedule and drains."""
