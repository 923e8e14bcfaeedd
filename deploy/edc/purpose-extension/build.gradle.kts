// Sketch (not built here): add this module to an EDC 0.18 connector launcher.
plugins {
    `java-library`
}

dependencies {
    implementation(platform("org.eclipse.edc:edc-bom:0.18.0"))
    implementation("org.eclipse.edc:policy-engine-spi")
    implementation("org.eclipse.edc:participant-spi")
    implementation("org.eclipse.edc:control-plane-spi")
}
