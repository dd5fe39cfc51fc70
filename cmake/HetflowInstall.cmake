include(CMakePackageConfigHelpers)

install(TARGETS hetflow EXPORT hetflowTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/hetflow DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/include/hetflow/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hetflow)
install(EXPORT hetflowTargets NAMESPACE hetflow:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hetflow)

configure_package_config_file(cmake/hetflowConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/hetflowConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hetflow)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/hetflowConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hetflowConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/hetflowConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hetflow)

# Relative to the .pc file, so the installed tree can be moved (or installed with --prefix).
file(RELATIVE_PATH HETFLOW_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(cmake/hetflow.pc.in ${CMAKE_CURRENT_BINARY_DIR}/hetflow.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hetflow.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
