"""The task formats users bring, each turned into our task file's shape (`definition.TaskDefinition` as data):
Granary task documents, Seed manifests and process-api / SEPEX plugin files."""
