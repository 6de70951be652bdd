/* HDF5 C API (Debian: libhdf5-dev; pkg-config name "hdf5").
 * HDF5 exposes its predefined types and property-list classes as macros over globals that
 * Swift cannot import; these inline accessors make them callable. */
#include <hdf5.h>

static inline hid_t lift_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t lift_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t lift_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t lift_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t lift_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t lift_h5t_std_u64le(void) { return H5T_STD_U64LE; }
static inline hid_t lift_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t lift_h5t_std_u8le(void) { return H5T_STD_U8LE; }
static inline hid_t lift_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t lift_h5t_ieee_f32be(void) { return H5T_IEEE_F32BE; }
static inline hid_t lift_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t lift_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t lift_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t lift_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t lift_h5p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t lift_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t lift_h5p_dataset_access(void) { return H5P_DATASET_ACCESS; }
static inline hid_t lift_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t lift_h5s_all(void) { return H5S_ALL; }
static inline hid_t lift_h5e_default(void) { return H5E_DEFAULT; }
static inline hsize_t lift_h5s_unlimited(void) { return H5S_UNLIMITED; }
static inline size_t lift_h5t_variable(void) { return H5T_VARIABLE; }
static inline unsigned lift_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned lift_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned lift_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline unsigned lift_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
