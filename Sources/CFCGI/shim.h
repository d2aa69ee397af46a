#ifndef CFCGI_SHIM_H
#define CFCGI_SHIM_H
/* Only fcgiapp.h: fcgi_stdio.h redefines printf/FILE and must never be imported. */
#include <fcgiapp.h>
#endif
