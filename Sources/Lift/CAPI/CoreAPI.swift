import CLiftABI
import Glibc

// The C strings below are made once and only read afterwards, by any thread.
nonisolated(unsafe) private let versionCString: UnsafePointer<CChar> = UnsafePointer(strdup(liftVersion)!)

nonisolated(unsafe) private let statusNames: [UInt32: UnsafePointer<CChar>] = {
  var table: [UInt32: UnsafePointer<CChar>] = [:]
  for raw in UInt32(0)...UInt32(LIFT_ERR_INTERNAL.rawValue) {
    let name = statusName(lift_status(rawValue: raw))
    if name != "LIFT_ERR_UNKNOWN" { table[raw] = UnsafePointer(strdup(name)!) }
  }
  return table
}()

nonisolated(unsafe) private let unknownStatusName: UnsafePointer<CChar> = UnsafePointer(strdup("LIFT_ERR_UNKNOWN")!)

@_cdecl("lift_version")
public func cLiftVersion() -> UnsafePointer<CChar> { versionCString }

@_cdecl("lift_version_number")
public func cLiftVersionNumber() -> UInt32 { UInt32(liftVersionNumber) }

@_cdecl("lift_struct_size")
public func cLiftStructSize(_ name: UnsafePointer<CChar>?, _ size: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let name = try requiredString(name, "name")
    let size = try required(size, "size")
    guard let known = sizedCStructs.first(where: { $0.name == name }) else {
      throw .notFound("'\(name)' is not a struct of lift.h (\(sizedCStructs.map { $0.name }.joined(separator: ", ")))")
    }
    size.pointee = known.size
  }
}

@_cdecl("lift_last_error")
public func cLiftLastError() -> UnsafePointer<CChar> { LastError.current }

@_cdecl("lift_status_name")
public func cLiftStatusName(_ status: lift_status) -> UnsafePointer<CChar> {
  statusNames[status.rawValue] ?? unknownStatusName
}
