// Schema texts compiled into hvbroker (see BUILD): VM files import "/hv/vm.capnp".
#ifndef HV_SCHEMA_VM_SCHEMA_TEXT_H_
#define HV_SCHEMA_VM_SCHEMA_TEXT_H_

namespace hv::schema {
extern const char kVmSchemaText[];   // schema/vm.capnp
extern const char kCxxSchemaText[];  // capnp/c++.capnp, which vm.capnp imports
}  // namespace hv::schema

#endif  // HV_SCHEMA_VM_SCHEMA_TEXT_H_
