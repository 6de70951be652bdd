import CLiftABI

// The version has one source: the LIFT_VERSION_* macros of Include/lift.h. The library, the
// `lift` command, the Python package, the pkg-config file and the Debian package all take it
// from there.

/// liblift's version as "MAJOR.MINOR.PATCH" (semantic versioning).
public let liftVersion = "\(LIFT_VERSION_MAJOR).\(LIFT_VERSION_MINOR).\(LIFT_VERSION_PATCH)"

/// The version as MAJOR * 10000 + MINOR * 100 + PATCH.
public let liftVersionNumber = Int(LIFT_VERSION_MAJOR) * 10000 + Int(LIFT_VERSION_MINOR) * 100 + Int(LIFT_VERSION_PATCH)
