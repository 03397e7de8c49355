"""Developer tooling: the local dev stack, the Kafka launcher (its Maven pom shipped as package data),
traffic generation, example events and schema/docs generation. Nothing else imports it.
"""
