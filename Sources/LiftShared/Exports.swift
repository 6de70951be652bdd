// The shared library liblift.so: the Lift module linked with lift.map, which exports exactly the
// C functions of Include/lift.h (as version LIFT_<major>) and hides every Swift symbol, and with
// the SONAME liblift.so.<major> (see Package.swift). Nothing else lives here.
@_exported import Lift
