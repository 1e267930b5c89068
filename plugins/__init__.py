"""Built-in plugins, one subpackage per family; each is an entry point of the forgeline distribution."""
