#ifndef CJANSSON_SHIM_H
#define CJANSSON_SHIM_H
#include <jansson.h>
/* Function-like macros are not imported by Swift: wrap the ones we use. */
static inline int cjansson_typeof(const json_t *j) { return (int)json_typeof(j); }
static inline size_t cjansson_dump_flags(void) { return (size_t)(JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17)); }
static inline size_t cjansson_load_flags(void) { return (size_t)(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL); }
static inline json_t *cjansson_null(void) { return json_null(); }
static inline json_t *cjansson_bool(int v) { return v ? json_true() : json_false(); }
static inline void cjansson_decref(json_t *j) { json_decref(j); }
static inline const char *cjansson_error_text(const json_error_t *e) { return e->text; }
static inline int cjansson_error_line(const json_error_t *e) { return e->line; }
static inline int cjansson_error_column(const json_error_t *e) { return e->column; }
#endif
