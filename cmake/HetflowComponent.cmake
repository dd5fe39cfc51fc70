# hetflow_component(<target> EXPORT_NAME <name> EXPORT_SET <set>)
#
# A library beside the core (a device driver, the MPI layer), built as its own shared library
# that exports only what its public header marks HETFLOW_API, and reaches its own headers under
# src/ (engine internals are not used). In a Python wheel it is installed beside the core
# library, in the hetflow package, and finds the vendor libraries where this build found them;
# otherwise in an export set of its own, which hetflowConfig.cmake loads only where the library
# was installed, so that a consumer of the core alone never needs the vendor's SDK.
function(hetflow_component target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "EXPORT_NAME;EXPORT_SET" "")
  if(ARG_UNPARSED_ARGUMENTS OR NOT ARG_EXPORT_NAME OR NOT ARG_EXPORT_SET)
    message(FATAL_ERROR "hetflow_component(${target} EXPORT_NAME <name> EXPORT_SET <set>)")
  endif()
  target_include_directories(${target} PRIVATE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/src>)
  set_target_properties(${target} PROPERTIES
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
    POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    EXPORT_NAME ${ARG_EXPORT_NAME})
  hetflow_warnings(${target})
  if(SKBUILD)
    set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN" INSTALL_RPATH_USE_LINK_PATH ON)
    install(TARGETS ${target} LIBRARY DESTINATION hetflow)
  else()
    install(TARGETS ${target} EXPORT ${ARG_EXPORT_SET}
            LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
            ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
            RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    install(EXPORT ${ARG_EXPORT_SET} NAMESPACE hetflow:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hetflow)
  endif()
endfunction()
