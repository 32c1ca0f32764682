# SPDX-License-Identifier: BSD-2-Clause
# PM_CHECK_CFLAG(FLAG, ACTION-IF-OK, ACTION-IF-NOT)
# Does the C compiler accept FLAG without so much as a warning?
AC_DEFUN([PM_CHECK_CFLAG], [
  AS_VAR_PUSHDEF([pm_var], [pm_cv_cflag_$1])
  AC_CACHE_CHECK([whether $CC accepts $1], [pm_var], [
    pm_save_cflags=$CFLAGS
    CFLAGS="$CFLAGS -Werror $1"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [AS_VAR_SET([pm_var], [yes])], [AS_VAR_SET([pm_var], [no])])
    CFLAGS=$pm_save_cflags])
  AS_VAR_IF([pm_var], [yes], [$2], [$3])
  AS_VAR_POPDEF([pm_var])
])

# PM_CHECK_LDFLAG(FLAG, ACTION-IF-OK, ACTION-IF-NOT)
AC_DEFUN([PM_CHECK_LDFLAG], [
  AS_VAR_PUSHDEF([pm_var], [pm_cv_ldflag_$1])
  AC_CACHE_CHECK([whether the linker accepts $1], [pm_var], [
    pm_save_ldflags=$LDFLAGS
    LDFLAGS="$LDFLAGS -Werror $1"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])], [AS_VAR_SET([pm_var], [yes])], [AS_VAR_SET([pm_var], [no])])
    LDFLAGS=$pm_save_ldflags])
  AS_VAR_IF([pm_var], [yes], [$2], [$3])
  AS_VAR_POPDEF([pm_var])
])
