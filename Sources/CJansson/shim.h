#ifndef CJANSSON_SHIM_H
#define CJANSSON_SHIM_H
#include <jansson.h>
/* Function-like macros are not imported by Swift: wrap the ones we use. */
static inline int cjansson_typeof(const json_t *j) { return (int)json_typeof(j); }
static inline size_t cjansson_compact_flags(void) { return (size_t)(JSON_COMPACT | JSON_ENSURE_ASCII * 0); }
static inline json_t *cjansson_null(void) { return json_null(); }
static inline json_t *cjansson_bool(int v) { return v ? json_true() : json_false(); }
static inline void cjansson_decref(json_t *j) { json_decref(j); }
static inline const char *cjansson_error_text(const json_error_t *e) { return e->text; }
static inline int cjansson_error_line(const json_error_t *e) { return e->line; }
static inline int cjansson_error_column(const json_error_t *e) { return e->column; }
#endif
