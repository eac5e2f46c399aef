"""The index: every SQL statement of the project, behind the store's interface, and the one writer."""
