/// liblift's version (semantic versioning). The C ABI reports the same string.
public let liftVersion = "0.1.0"
